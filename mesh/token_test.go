package mesh

import (
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

func testPool(t testing.TB, naddrs int) Pool {
	t.Helper()
	p, err := NewPool()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < naddrs; i++ {
		_, pub, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := peer.IDFromPublicKey(pub)
		p.Bootstrap = append(p.Bootstrap, peer.AddrInfo{ID: id, Addrs: []multiaddr.Multiaddr{
			multiaddr.StringCast("/ip4/127.0.0.1/udp/4242/quic-v1"),
			multiaddr.StringCast("/ip4/127.0.0.1/tcp/4242"),
		}})
	}
	return p
}

func TestTokenRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 3} {
		p := testPool(t, n)
		tok := EncodeToken(p)
		got, err := ParseToken(tok)
		if err != nil {
			t.Fatalf("ParseToken(EncodeToken(%d peers)) error %v", n, err)
		}
		if got.Secret != p.Secret {
			t.Errorf("secret changed in round trip")
		}
		if len(got.Bootstrap) != n {
			t.Fatalf("got %d bootstrap peers; want %d", len(got.Bootstrap), n)
		}
		for i := range got.Bootstrap {
			if got.Bootstrap[i].ID != p.Bootstrap[i].ID || len(got.Bootstrap[i].Addrs) != 2 {
				t.Errorf("bootstrap %d = %v; want %v", i, got.Bootstrap[i], p.Bootstrap[i])
			}
		}
		if got.ID() != p.ID() {
			t.Errorf("pool ID %s; want %s", got.ID(), p.ID())
		}
	}
}

func TestTokenRejects(t *testing.T) {
	good := EncodeToken(testPool(t, 1))
	body := good[len(tokenPrefix):]
	// Change one character in the middle to another base58 character.
	mid := len(body) / 2
	swapped := byte('2')
	if body[mid] == '2' {
		swapped = '3'
	}
	typo := tokenPrefix + body[:mid] + string(swapped) + body[mid+1:]
	cases := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrTokenPrefix},
		{"foreign", "tskey-abc123", ErrTokenPrefix},
		{"not base58", tokenPrefix + "0OIl", ErrTokenMalformed},
		{"too short", tokenPrefix + "abc", ErrTokenMalformed},
		{"typo", typo, ErrTokenChecksum},
		{"truncated", good[:len(good)-3], ErrTokenChecksum},
		{"huge", tokenPrefix + strings.Repeat("a", maxTokenLen), ErrTokenMalformed},
	}
	for _, c := range cases {
		_, err := ParseToken(c.in)
		if !errors.Is(err, c.want) {
			t.Errorf("ParseToken(%s) = %v; want %v", c.name, err, c.want)
		}
	}
	if _, err := ParseToken("  " + good + "\n"); err != nil {
		t.Errorf("ParseToken with surrounding space = %v; want nil", err)
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add(EncodeToken(testPool(f, 0)))
	f.Add(EncodeToken(testPool(f, 2)))
	f.Add("shoal1.")
	f.Add("shoal1.3mJr7AoUXx2Wqd")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseToken(s)
		if err != nil {
			return
		}
		// Whatever parses must survive a round trip unchanged.
		again, err := ParseToken(EncodeToken(p))
		if err != nil {
			t.Fatalf("re-encoded token does not parse: %v", err)
		}
		if again.Secret != p.Secret || len(again.Bootstrap) != len(p.Bootstrap) {
			t.Fatalf("round trip changed the pool")
		}
	})
}

package node

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/shoalmesh/shoal/market"
)

// receiptFile is the append-only file of receipts a ledger accepted: each
// a uvarint length then the signed receipt. It is only ever appended to;
// a tail cut short by a crash is dropped at open. Not safe for concurrent
// use.
type receiptFile struct {
	f    *os.File
	path string
}

// openReceiptFile opens (creating) the file at path and hands every
// receipt in it to each, in order. A torn or corrupt tail is cut off, so
// what is appended next stays readable.
func openReceiptFile(path string, each func(raw []byte), log *slog.Logger) (*receiptFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: receipts file: %w", err)
	}
	good, err := readReceipts(bufio.NewReader(f), each)
	if err != nil {
		log.Warn("receipts file ends in a torn or corrupt record; cutting it off", "file", path, "at", good, "err", err)
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, fmt.Errorf("node: receipts file: %w", err)
		}
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("node: receipts file: %w", err)
	}
	return &receiptFile{f: f, path: path}, nil
}

// readReceipts reads records until EOF and returns the offset after the
// last whole one; err says why it stopped early.
func readReceipts(r *bufio.Reader, each func(raw []byte)) (good int64, err error) {
	for {
		n, err := binary.ReadUvarint(r)
		if errors.Is(err, io.EOF) {
			return good, nil
		}
		if err != nil {
			return good, err
		}
		if n == 0 || n > market.MaxReceiptSize {
			return good, fmt.Errorf("a record of %d bytes", n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return good, err
		}
		each(b)
		good += int64(uvarintLen(n)) + int64(n)
	}
}

func uvarintLen(n uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], n)
}

// append writes raws at the end of the file and syncs it.
func (rf *receiptFile) append(raws [][]byte) error {
	if rf == nil || rf.f == nil || len(raws) == 0 {
		return nil
	}
	var buf []byte
	for _, b := range raws {
		buf = binary.AppendUvarint(buf, uint64(len(b)))
		buf = append(buf, b...)
	}
	if _, err := rf.f.Write(buf); err != nil {
		return fmt.Errorf("node: receipts file %s: %w", rf.path, err)
	}
	if err := rf.f.Sync(); err != nil {
		return fmt.Errorf("node: receipts file %s: %w", rf.path, err)
	}
	return nil
}

func (rf *receiptFile) close() {
	if rf != nil && rf.f != nil {
		rf.f.Close()
		rf.f = nil
	}
}

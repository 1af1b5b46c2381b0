package test

import (
	"encoding/json"
	"errors"
	"os/exec"
)

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

func jsonInto(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func asExit(err error, ee **exec.ExitError) bool { return errors.As(err, ee) }

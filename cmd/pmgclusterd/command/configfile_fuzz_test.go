package command

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzConfigFile checks the decoder of the --config file: it never panics, and a
// mistake it reports as a *FileError names the file and a line.
func FuzzConfigFile(f *testing.F) {
	var printed bytes.Buffer
	cmd := New(&bytes.Buffer{})
	if err := WriteConfig(&printed, cmd.Flags()); err != nil {
		f.Fatal(err)
	}
	f.Add(printed.String())
	f.Add("ip = \"10.0.0.1\"\nport = 8006\nconfig-export-prefix = [\"a/\", \"b/\"]\nraft-election-timeout = \"1s\"\n")
	f.Add("nope = 1\nport = \"x\"\n[table]\nkey = 1\n")
	f.Add("a.b.c = 1\nport = [1, 2]\n")
	f.Add("ip = \"unterminated\n")
	f.Fuzz(func(t *testing.T, content string) {
		fs := New(&bytes.Buffer{}).Flags()
		err := decodeConfigFile(fs, "fuzz.toml", []byte(content))
		var fe *FileError
		if errors.As(err, &fe) && (fe.File != "fuzz.toml" || fe.Line < 0) {
			t.Fatalf("FileError %+v", fe)
		}
	})
}

// TestConfigFileSizeBound: a --config file over maxConfigFile is refused before it is
// parsed, with a message naming it.
func TestConfigFileSizeBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.toml")
	if err := os.WriteFile(path, []byte("# "+strings.Repeat("x", maxConfigFile)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := LoadConfigFile(New(&bytes.Buffer{}).Flags(), path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "over") {
		t.Fatalf("LoadConfigFile of a %d-byte file: %v", maxConfigFile+3, err)
	}
	ok := filepath.Join(t.TempDir(), "ok.toml")
	if err := os.WriteFile(ok, []byte("port = 8006\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := LoadConfigFile(New(&bytes.Buffer{}).Flags(), ok); err != nil {
		t.Fatal(err)
	}
}

package bookmark

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFileStore(t *testing.T) {
	s := FileStore{Path: filepath.Join(t.TempDir(), "bm")}
	if _, ok, err := s.Load(); ok || err != nil {
		t.Fatalf("empty store: ok=%v err=%v", ok, err)
	}
	for _, b := range []Consumer{{Source: "s", Group: 1, Op: -1, Done: true}, {Source: "s", CommitOffset: 8, Group: 4, Txn: 2, Op: 7, Rec: 1}} {
		if err := s.Save(b); err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.Load()
		if !ok || err != nil || got != b {
			t.Fatalf("Load = %+v, %v, %v; want %+v", got, ok, err, b)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(s.Path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	if err := os.WriteFile(s.Path, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Load(); err == nil {
		t.Error("a garbled file loaded without error")
	}
}

func TestSQLStoreRejectsBadNames(t *testing.T) {
	for _, s := range []SQLStore{{Table: "x; DROP TABLE y", Name: "n"}, {Table: "ok", Name: ""}} {
		if err := s.check(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}

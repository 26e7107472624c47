package mysql

import (
	"testing"
)

func TestParsePosition(t *testing.T) {
	tests := []struct {
		in   string
		want Position
		bad  bool
	}{
		{in: "mariadb-bin.000003:4825", want: Position{File: "mariadb-bin.000003", Offset: 4825}},
		{in: "0-1-126;mariadb-bin.000003:4825", want: Position{GTIDs: "0-1-126", File: "mariadb-bin.000003", Offset: 4825}},
		{in: "0-1-126,1-2-7;mariadb-bin.000010:4", want: Position{GTIDs: "0-1-126,1-2-7", File: "mariadb-bin.000010", Offset: 4}},
		{in: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11-18,86ca4a2e-71ca-11e1-9e33-c80aa9429562:1-27;binlog.000002:157",
			want: Position{GTIDs: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11-18,86ca4a2e-71ca-11e1-9e33-c80aa9429562:1-27", File: "binlog.000002", Offset: 157}},
		{in: "binlog.000002:4294967295", want: Position{File: "binlog.000002", Offset: 4294967295}},
		{in: "", bad: true},
		{in: "binlog.000002", bad: true},
		{in: ":4", bad: true},
		{in: ";binlog.000002:4", bad: true},
		{in: "binlog.000002:4294967296", bad: true},
		{in: "binlog.000002:-1", bad: true},
		{in: "0-1-5;binlog.000002:x", bad: true},
	}
	for _, tc := range tests {
		got, err := ParsePosition(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParsePosition(%q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePosition(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if s := got.String(); s != tc.in {
			t.Errorf("ParsePosition(%q).String() = %q", tc.in, s)
		}
	}
}

func TestPositionBefore(t *testing.T) {
	a := Position{File: "mariadb-bin.000003", Offset: 900}
	b := Position{File: "mariadb-bin.000003", Offset: 4825}
	c := Position{File: "mariadb-bin.000004", Offset: 4}
	if !a.before(b) || !b.before(c) || !a.before(c) || b.before(a) || c.before(b) || a.before(a) {
		t.Error("positions do not order by file, then offset")
	}
}

func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"0-1-126;mariadb-bin.000003:4825", "binlog.000002:157", "a:b:c;d:1", ";:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err != nil {
			return
		}
		q, err := ParsePosition(p.String())
		if err != nil || q != p {
			t.Fatalf("%q parses to %+v, whose text %q parses to %+v, %v", s, p, p.String(), q, err)
		}
	})
}

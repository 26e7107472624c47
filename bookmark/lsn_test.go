package bookmark

import "testing"

func TestLSNRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		text string
		lsn  LSN
	}{{"0/0", 0}, {"0/16B3748", 0x16B3748}, {"16/B374D848", 0x16_B374D848}, {"FFFFFFFF/FFFFFFFF", ^LSN(0)}} {
		got, err := ParseLSN(tc.text)
		if err != nil || got != tc.lsn {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v", tc.text, got, err, tc.lsn)
		}
		if s := tc.lsn.String(); s != tc.text {
			t.Errorf("%d.String() = %q, want %q", uint64(tc.lsn), s, tc.text)
		}
	}
	for _, bad := range []string{"", "16", "x/1", "1/x", "100000000/0", "1/2/3"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) succeeded", bad)
		}
	}
}

func FuzzParseLSN(f *testing.F) {
	f.Add("0/16B3748")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			return
		}
		again, err := ParseLSN(l.String())
		if err != nil || again != l {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, l, l.String(), again, err)
		}
	})
}

func TestCommitRecordRoundTrip(t *testing.T) {
	in := &CommitRecord{Version: CommitVersion, Source: "postgres/db/slot", Group: 7, Resume: "0/10",
		Txns:   []TxnEntry{{ID: "1", Position: "0/8", End: "0/10", CommitMillis: 5, Changes: 2, Records: 3}},
		Ranges: []Range{{Topic: "t", Partition: 0, First: 4, Last: 6, Count: 3}}}
	b, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseCommitRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Group != 7 || out.Txns[0].Records != 3 || out.Ranges[0].Last != 6 {
		t.Errorf("%+v", out)
	}
	for _, bad := range []string{`{`, `{"v":2,"source":"s","group":1}`, `{"v":1,"group":1}`} {
		if _, err := ParseCommitRecord([]byte(bad)); err == nil {
			t.Errorf("ParseCommitRecord(%s) succeeded", bad)
		}
	}
}

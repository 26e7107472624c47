package capture

import (
	"slices"
	"testing"
)

func TestParseSignal(t *testing.T) {
	for _, tc := range []struct {
		kind, data string
		want       SnapshotRequest
		bad        bool
	}{
		{"execute-snapshot", `{"data-collections": ["public.a", "s.b"], "type": "incremental"}`, SnapshotRequest{Action: SnapshotStart, Tables: []string{"public.a", "s.b"}}, false},
		{"stop-snapshot", "", SnapshotRequest{Action: SnapshotCancel}, false},
		{"pause-snapshot", "", SnapshotRequest{Action: SnapshotPause}, false},
		{"resume-snapshot", "{}", SnapshotRequest{Action: SnapshotResume}, false},
		{"execute-snapshot", "public.a", SnapshotRequest{}, true},
		{"log", "", SnapshotRequest{}, true},
	} {
		got, err := ParseSignal(tc.kind, tc.data)
		if (err != nil) != tc.bad || got.Action != tc.want.Action || !slices.Equal(got.Tables, tc.want.Tables) {
			t.Errorf("ParseSignal(%q, %q) = %+v, %v", tc.kind, tc.data, got, err)
		}
	}
}

func TestCopyProgress(t *testing.T) {
	var p CopyProgress
	p.Reset([]TableCopy{{Table: "a", Done: true}, {Table: "b"}}, false)
	p.Add(TableCopy{Table: "c"})
	p.Update("b", func(c *TableCopy) { c.Rows = 7 })
	p.SetPaused(true)
	got := p.Copying()
	if len(got) != 3 || got[1].Rows != 7 || !got[2].Paused {
		t.Fatalf("%+v", got)
	}
	p.Cancel([]string{"c"})
	if got := p.Copying(); len(got) != 2 {
		t.Errorf("after cancelling c: %+v", got)
	}
	p.Cancel(nil)
	if got := p.Copying(); len(got) != 1 || got[0].Table != "a" {
		t.Errorf("after cancelling all: %+v (the finished table stays)", got)
	}
}

//go:build linux

package nettest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReplyWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{name: "one line", writes: []string{"p: {}\n"}, want: []string{"{}"}},
		{name: "other output dropped", writes: []string{"=== RUN x\np: a\nPASS\n"}, want: []string{"a"}},
		{name: "split across writes", writes: []string{"p: {\"o", "k\":true}", "\np", ": b\n"}, want: []string{`{"ok":true}`, "b"}},
		{name: "unterminated line held back", writes: []string{"p: a\np: b"}, want: []string{"a"}},
		{name: "prefix only at the start", writes: []string{"x p: a\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := make(chan string, 16)
			w := &replyWriter{prefix: "p: ", lines: lines}
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", s, n, err, len(s))
				}
			}
			close(lines)
			var got []string
			for s := range lines {
				got = append(got, s)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("reply lines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplyWriterNeverBlocks(t *testing.T) {
	lines := make(chan string, 1)
	w := &replyWriter{prefix: "p: ", lines: lines}
	// A second reply while the first is unread is dropped, not waited for.
	w.Write([]byte("p: 1\np: 2\n"))
	if got := <-lines; got != "1" {
		t.Errorf("first reply = %q, want 1", got)
	}
	select {
	case s := <-lines:
		t.Errorf("got reply %q, want the one beyond the channel's room dropped", s)
	default:
	}
}

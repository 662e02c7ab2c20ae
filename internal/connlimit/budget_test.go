package connlimit

import (
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		nofile                   uint64
		smtp, smtpPer, hs, hsPer int
		join, joinPer, control   int
		metrics, metricsPer      int
	}{
		{256, 64, 32, 32, 8, 16, 4, 16, 8, 4},
		{1024, 100, 50, 176, 22, 88, 22, 64, 16, 8},
		{1 << 20, 100, 50, 1024, 128, 256, 64, 64, 16, 8},
		{32, 4, 2, 8, 8, 4, 4, 4, 4, 2}, // below the floor: every cap at its minimum
	} {
		b := Plan(tc.nofile)
		got := []int{b.SMTPDefault, b.SMTPPerSourceDefault, b.Handshake, b.HandshakePerSource, b.Join, b.JoinPerSource, b.Control, b.Metrics, b.MetricsPerSource}
		want := []int{tc.smtp, tc.smtpPer, tc.hs, tc.hsPer, tc.join, tc.joinPer, tc.control, tc.metrics, tc.metricsPer}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("Plan(%d) = %+v, want smtp/per, handshake/per, join/per, control %v", tc.nofile, b, want)
				break
			}
		}
		if tc.nofile >= MinNoFile {
			if used := b.SMTP + b.Handshake + b.Join + b.Control + b.Metrics; used > int(tc.nofile)*3/4 || b.Reserved < 64 {
				t.Errorf("Plan(%d): caps use %d, reserved %d: too little left for Raft and the stores", tc.nofile, used, b.Reserved)
			}
		}
	}
	if !Plan(100).Low() || Plan(256).Low() {
		t.Error("Low: want true below 256 only")
	}
}

func TestSMTPCaps(t *testing.T) {
	b := Plan(256) // SMTP may use 64
	for _, tc := range []struct {
		max, per       int
		gotMax, gotPer int
		warn           string
	}{
		{0, 0, 64, 32, ""},
		{10, 0, 10, 10, ""},
		{40, 5, 40, 5, ""},
		{500, 0, 64, 32, "--smtp-max-connections 500 is more than the descriptor limit leaves for SMTP (64 of 256): using 64"},
		{20, 30, 20, 20, "--smtp-max-connections-per-ip 30 is more than the SMTP cap 20"},
	} {
		m, p, w := b.SMTPCaps(tc.max, tc.per)
		if m != tc.gotMax || p != tc.gotPer || (tc.warn == "") != (w == "") || !strings.Contains(w, tc.warn) {
			t.Errorf("SMTPCaps(%d, %d) = %d, %d, %q; want %d, %d, %q", tc.max, tc.per, m, p, w, tc.gotMax, tc.gotPer, tc.warn)
		}
	}
}

func TestReadNoFile(t *testing.T) {
	n, err := ReadNoFile()
	if err != nil || n == 0 {
		t.Fatalf("ReadNoFile() = %d, %v", n, err)
	}
}

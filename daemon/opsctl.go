package daemon

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// checkProgressEvery is the least time between two progress lines of a check's stream.
const checkProgressEvery = 250 * time.Millisecond

// registerOps serves the operator tools (check, maintenance) on the control socket.
func registerOps(mux *http.ServeMux, c *checker, mt *maintenance) {
	mux.HandleFunc("GET "+api.PathCheck, c.handleCheck)
	mux.HandleFunc("POST "+api.PathMaintenance, func(w http.ResponseWriter, r *http.Request) {
		var req api.MaintenanceRequest
		if decodeBody(w, r, &req) {
			res, err := mt.maintenance(r.Context(), req)
			reply(w, res, err)
		}
	})
}

// handleCheck runs the consistency check, streaming its progress as JSON lines and the
// report (or the error) as the last line.
func (c *checker) handleCheck(w http.ResponseWriter, r *http.Request) {
	if err := c.host.checkServing(); err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	var mu sync.Mutex // progress comes from several goroutines
	enc := json.NewEncoder(w)
	send := func(ev api.CheckEvent) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(ev)
		_ = rc.Flush()
	}
	var last time.Time
	var lastPhase string
	rep, err := c.check(r.Context(), r.URL.Query().Get("verify") == "1", func(p api.CheckProgress) {
		mu.Lock()
		now := time.Now()
		skip := p.Phase == lastPhase && now.Sub(last) < checkProgressEvery
		if !skip {
			last, lastPhase = now, p.Phase
		}
		mu.Unlock()
		if !skip {
			send(api.CheckEvent{Progress: &p})
		}
	})
	if err != nil {
		e := apiError(err)
		send(api.CheckEvent{Error: &e})
		return
	}
	send(api.CheckEvent{Report: rep})
}

// apiError is the api.Error that writeErr would answer for err.
func apiError(err error) api.Error {
	rec := &recorder{h: http.Header{}}
	writeErr(rec, err)
	var e api.Error
	if json.Unmarshal(rec.body.Bytes(), &e) != nil || e.Message == "" {
		e = api.Error{Code: api.CodeInternal, Message: err.Error()}
	}
	return e
}

// recorder is a minimal http.ResponseWriter that keeps the body.
type recorder struct {
	h    http.Header
	body bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(int)             {}

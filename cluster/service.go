package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/transport"
)

// Handler is what the Service needs of the node: one method per request. Every method
// must be safe for concurrent use; ctx ends when the caller goes away.
type Handler interface {
	// NodeInfo returns this node's own status row (PathNode).
	NodeInfo() api.Node
	// Apply applies cmd on this node, the master (PathApply).
	Apply(ctx context.Context, cmd fsm.Command) (ApplyResult, error)
	// ReadIndex confirms this node's leadership and returns its commit index.
	ReadIndex(ctx context.Context) (uint64, error)
	// Admit admits a joining node; relay is true on the join channel, where a
	// non-master forwards the request to the master, false for PathAdmit.
	Admit(ctx context.Context, req AdmitRequest, relay bool) (*Admission, error)
	// Delete removes member cid (PathDelete).
	Delete(ctx context.Context, cid uint64) (*api.DeleteResponse, error)
	// Transfer hands leadership to member cid (PathTransfer).
	Transfer(ctx context.Context, cid uint64) error
	// ReadmitMember takes back the fenced member whose certificate has req.Fingerprint
	// and whose build is req.Version and req.Level.
	ReadmitMember(ctx context.Context, req ReadmitRequest) (*Admission, error)
	// RecordCert publishes a member's renewed certificate and returns the index.
	RecordCert(ctx context.Context, req CertRecord) (uint64, error)
	// RenewCert renews this node's own certificate.
	RenewCert(ctx context.Context) (api.RenewedCert, error)
	// JoinInfo says who this node is (JoinPathInfo).
	JoinInfo() JoinInfo
	// CheckMembership says how this node sees a certificate (JoinPathMembership).
	CheckMembership(fingerprint string) Membership
}

// ErrorWriter answers err on w with its HTTP status and api error (the daemon's mapping
// of its errors to api codes). It must map ErrBadRequest to 400 and pass a
// *RemoteError on unchanged.
type ErrorWriter func(w http.ResponseWriter, err error)

// Service serves the protocol: RPC for transport.ChanRPC, Join for transport.ChanJoin.
type Service struct {
	h        Handler
	writeErr ErrorWriter
	rpc      *http.ServeMux
	join     *http.ServeMux
}

// NewService returns a Service that dispatches to h and answers errors with writeErr.
func NewService(h Handler, writeErr ErrorWriter) *Service {
	s := &Service{h: h, writeErr: writeErr, rpc: http.NewServeMux(), join: http.NewServeMux()}
	s.rpc.HandleFunc("GET "+PathNode, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.NodeInfo()) })
	s.rpc.HandleFunc("POST "+PathApply, s.apply)
	s.rpc.HandleFunc("POST "+PathApplyBatch, s.applyBatch) // level 2 (batch.go)
	s.rpc.HandleFunc("GET "+PathReadIndex, func(w http.ResponseWriter, r *http.Request) {
		idx, err := h.ReadIndex(r.Context())
		s.reply(w, ReadIndexResult{Index: idx}, err)
	})
	s.rpc.HandleFunc("POST "+PathAdmit, func(w http.ResponseWriter, r *http.Request) { s.admit(w, r, false) })
	s.rpc.HandleFunc("POST "+PathDelete, func(w http.ResponseWriter, r *http.Request) {
		var req api.DeleteRequest
		if s.decode(w, r, &req) {
			out, err := h.Delete(r.Context(), req.CID)
			s.reply(w, out, err)
		}
	})
	s.rpc.HandleFunc("POST "+PathTransfer, func(w http.ResponseWriter, r *http.Request) {
		var req TransferRequest
		if s.decode(w, r, &req) {
			s.reply(w, struct{}{}, h.Transfer(r.Context(), req.CID))
		}
	})
	s.rpc.HandleFunc("POST "+PathReadmit, func(w http.ResponseWriter, r *http.Request) {
		// The forwarded form: the member that received the request vouches for the
		// fingerprint it saw.
		var req ReadmitRequest
		if s.decode(w, r, &req) {
			adm, err := h.ReadmitMember(r.Context(), req)
			s.reply(w, adm, err)
		}
	})
	s.rpc.HandleFunc("POST "+PathRecordCert, func(w http.ResponseWriter, r *http.Request) {
		var req CertRecord
		if s.decode(w, r, &req) {
			idx, err := h.RecordCert(r.Context(), req)
			s.reply(w, ApplyResult{Index: idx, CID: req.CID}, err)
		}
	})
	s.rpc.HandleFunc("POST "+PathRenewCert, func(w http.ResponseWriter, r *http.Request) {
		rc, err := h.RenewCert(r.Context())
		s.reply(w, rc, err)
	})
	s.join.HandleFunc("GET "+JoinPathInfo, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.JoinInfo()) })
	s.join.HandleFunc("POST "+JoinPathAdmit, func(w http.ResponseWriter, r *http.Request) { s.admit(w, r, true) })
	s.join.HandleFunc("POST "+JoinPathMembership, func(w http.ResponseWriter, r *http.Request) {
		var req FingerprintRequest
		if s.decode(w, r, &req) {
			writeJSON(w, h.CheckMembership(req.Fingerprint))
		}
	})
	s.join.HandleFunc("POST "+JoinPathReadmit, func(w http.ResponseWriter, r *http.Request) {
		// A fenced member asks with its own certificate: the master knows it by it.
		fp := transport.PeerFingerprintFromContext(r.Context())
		if fp == "" {
			s.writeErr(w, fmt.Errorf("%w: re-admission needs the node's own certificate", ErrBadRequest))
			return
		}
		var req ReadmitRequest // the node's build; "{}" from release 0.1.0
		if !s.decode(w, r, &req) {
			return
		}
		req.Fingerprint = fp
		adm, err := h.ReadmitMember(r.Context(), req)
		s.reply(w, adm, err)
	})
	if oh, ok := h.(OpsHandler); ok {
		s.registerOps(oh)
	}
	return s
}

// RPC returns the handler of the cluster RPC channel.
func (s *Service) RPC() http.Handler { return s.rpc }

// Join returns the handler of the join channel.
func (s *Service) Join() http.Handler { return s.join }

func (s *Service) apply(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxCommandBytes))
	if err != nil {
		s.writeErr(w, fmt.Errorf("%w: command: %v", ErrBadRequest, err))
		return
	}
	cmd, err := fsm.Decode(b)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	res, err := s.h.Apply(r.Context(), cmd)
	s.reply(w, res, err)
}

func (s *Service) admit(w http.ResponseWriter, r *http.Request, relay bool) {
	var req AdmitRequest
	if s.decode(w, r, &req) {
		adm, err := s.h.Admit(r.Context(), req, relay)
		s.reply(w, adm, err)
	}
}

// decode decodes a JSON request body of at most MaxRequestBytes into v, answering the
// error itself (ErrBadRequest) if it cannot.
func (s *Service) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := DecodeRequest(w, r, v); err != nil {
		s.writeErr(w, err)
		return false
	}
	return true
}

// DecodeRequest decodes a JSON request body of at most MaxRequestBytes into v. Its
// error wraps ErrBadRequest.
func DecodeRequest(w http.ResponseWriter, r *http.Request, v any) error {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBytes)).Decode(v); err != nil {
		return fmt.Errorf("%w: request body: %v", ErrBadRequest, err)
	}
	return nil
}

func (s *Service) reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, v)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}

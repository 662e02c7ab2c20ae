package cli

import (
	"context"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

// DefaultSocketPath is the control socket used when neither --socket nor PMGCM_SOCKET is set.
const DefaultSocketPath = "/run/pmgcm/pmgcm.sock"

// API is what the commands need from the daemon. client.Client implements it; tests use fakes.
type API interface {
	Status(ctx context.Context) (*api.Status, error)
	Create(ctx context.Context) (*api.CreateResponse, error)
	ConfigGet(ctx context.Context, key string, opts client.ReadOptions) (*client.ConfigValue, error)
	ConfigSet(ctx context.Context, key string, value []byte, opts client.WriteOptions) (*api.WriteResponse, error)
	ConfigDelete(ctx context.Context, key string, opts client.WriteOptions) (*api.WriteResponse, error)
	ConfigList(ctx context.Context, prefix string, opts client.ReadOptions) (*api.ConfigList, client.ReadInfo, error)
	ConfigListEach(ctx context.Context, prefix string, opts client.ReadOptions, fn func(api.ConfigEntry) error) (client.ReadInfo, error)
	ConfigWatch(ctx context.Context, prefix string, from uint64, wait time.Duration) (*api.WatchResponse, error)
	JoinProbe(ctx context.Context, master string) (*api.JoinProbe, error)
	Join(ctx context.Context, req api.JoinRequest) (*api.JoinResponse, error)
	JoinCmd(ctx context.Context, rotate bool) (*api.JoinCmd, error)
	RotateJoinToken(ctx context.Context, ttl time.Duration) (*api.JoinCmd, error)
	Delete(ctx context.Context, cid uint64, force bool) (*api.DeleteResponse, error)
	Promote(ctx context.Context, force bool) (*api.PromoteResponse, error)
	Sync(ctx context.Context, masterIP string) (*api.SyncResponse, error)
	QuarantineList(ctx context.Context, from, to, state string) ([]api.QuarantineMessage, error)
	QuarantineListEach(ctx context.Context, from, to, state string, fn func(api.QuarantineMessage) error) error
	QuarantineShow(ctx context.Context, id string) (msg []byte, sha256 string, err error)
	QuarantineDelete(ctx context.Context, id string) (*api.QuarantineMessage, error)
	QuarantineRelease(ctx context.Context, id string) (*api.QuarantineMessage, error)
}

var _ API = (*client.Client)(nil)

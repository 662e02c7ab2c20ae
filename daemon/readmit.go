package daemon

import (
	"context"

	"github.com/pmgcm/pmgcm/cluster"
)

// ReadmitMember implements cluster.Handler: take back a fenced member, whose build the
// request names (checked against the cluster version on the master).
func (h rpcHandler) ReadmitMember(ctx context.Context, req cluster.ReadmitRequest) (*cluster.Admission, error) {
	return h.d.syncer.admitFencedBuild(ctx, req)
}

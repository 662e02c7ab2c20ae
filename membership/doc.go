// Package membership owns the voter policy (DESIGN safety rule 6) as pure functions:
// from the Raft configuration, the active members and the catch-up facts the master has
// gathered, Plan says which changes bring the configuration in line (add missing members
// as non-voters, remove servers that are no member, promote caught-up non-voters, demote
// surplus voters, record each member's suffrage); Targets holds the catch-up targets
// non-voters must reach first.
//
// It does no I/O of any kind (no network, disk, clock or Raft calls) and imports nothing
// of ours but fsm's types: the daemon gathers the facts, calls Plan, and carries out the
// changes through raftnode. It must never import daemon, cluster, raftnode or transport.
package membership

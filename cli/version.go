package cli

import "github.com/pmgcm/pmgcm/internal/version"

// Version is what `pmgcm --version` prints: the build's version and feature levels (see
// package internal/version, whose Version the Makefile sets from git).
var Version = version.String()

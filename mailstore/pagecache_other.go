//go:build !linux

package mailstore

import "os"

// dropCached does nothing where posix_fadvise is not called (pagecache.go).
func dropCached(*os.File) {}

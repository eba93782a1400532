//go:build tools

// Package tools names the commands this wrapper module builds; it is never compiled.
package tools

import (
	_ "sigs.k8s.io/metrics-server/cmd/metrics-server"
)

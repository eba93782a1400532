//go:build tools

// Package tools names the commands this wrapper module builds; it is never compiled.
package tools

import (
	_ "github.com/Shopify/toxiproxy/v2/cmd/server"
)

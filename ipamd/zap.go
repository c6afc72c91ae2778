package main

import "go.uber.org/zap"

// nopZap silences the etcd client's own zap logging: ipamd reports etcd
// trouble itself, through slog, with the request it affected.
func nopZap() *zap.Logger { return zap.NewNop() }

package etcdembed

import (
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// slogCore passes the embedded etcd's errors (and its fatal messages, after
// which zap exits the process) to ipamd's log. Silencing etcd entirely made
// ipamd exit with status 1 and no word on a full disk: etcd's WAL write
// fails, zap's Fatal exits, and the reason went to a no-op logger.
// Errors etcd reports about its own listeners while Close runs ("server
// closed", "use of closed network connection") are not news: closing
// silences them.
type slogCore struct {
	log     *slog.Logger
	closing *atomic.Bool
	fields  []zapcore.Field
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return l >= zapcore.ErrorLevel && (l >= zapcore.DPanicLevel || !c.closing.Load())
}

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, closing: c.closing, fields: append(append([]zapcore.Field(nil), c.fields...), fs...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(append([]zapcore.Field(nil), c.fields...), fs...) {
		f.AddTo(enc)
	}
	args := []any{"etcdLevel", e.Level.String()}
	for k, v := range enc.Fields {
		args = append(args, k, v)
	}
	c.log.Error("embedded etcd: "+e.Message, args...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

package bgpspeaker

import (
	"context"
	"log/slog"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger feeds GoBGP's log lines into slog. GoBGP's Info lines
// (every FSM step) become Debug: the speaker logs what an operator needs
// (session up/down, not established, graceful stop) itself.
type gobgpLogger struct{ l *slog.Logger }

func (g gobgpLogger) log(level slog.Level, msg string, f gobgplog.Fields) {
	if !g.l.Enabled(context.Background(), level) {
		return
	}
	args := make([]any, 0, 2*len(f))
	for k, v := range f {
		args = append(args, k, v)
	}
	g.l.Log(context.Background(), level, "gobgp: "+msg, args...)
}

func (g gobgpLogger) Panic(msg string, f gobgplog.Fields) { g.log(slog.LevelError, msg, f); panic(msg) }
func (g gobgpLogger) Fatal(msg string, f gobgplog.Fields) { g.log(slog.LevelError, msg, f); panic(msg) }
func (g gobgpLogger) Error(msg string, f gobgplog.Fields) { g.log(slog.LevelError, msg, f) }
func (g gobgpLogger) Warn(msg string, f gobgplog.Fields)  { g.log(slog.LevelWarn, msg, f) }
func (g gobgpLogger) Info(msg string, f gobgplog.Fields)  { g.log(slog.LevelDebug, msg, f) }
func (g gobgpLogger) Debug(msg string, f gobgplog.Fields) { g.log(slog.LevelDebug-4, msg, f) }
func (g gobgpLogger) SetLevel(gobgplog.LogLevel)          {}

func (g gobgpLogger) GetLevel() gobgplog.LogLevel {
	switch {
	case g.l.Enabled(context.Background(), slog.LevelDebug-4):
		return gobgplog.DebugLevel
	case g.l.Enabled(context.Background(), slog.LevelDebug):
		return gobgplog.InfoLevel
	case g.l.Enabled(context.Background(), slog.LevelWarn):
		return gobgplog.WarnLevel
	default:
		return gobgplog.ErrorLevel
	}
}

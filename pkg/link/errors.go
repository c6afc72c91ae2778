package link

import "errors"

// ErrNotBridge is wrapped by EnsureBridge's error when a link of the
// bridge's name exists and is of another kind: the configuration, not the
// host, is at fault (bridge-v6 answers CNI code 7).
var ErrNotBridge = errors.New("not a bridge")

// ErrNotNetNS is wrapped by OpenNetNS's error when the path exists but is
// not a network namespace (an unmounted bind mount, a regular file).
var ErrNotNetNS = errors.New("not a network namespace")

package link

import "errors"

// ErrNotNetNS is wrapped by OpenNetNS's error when the path exists but is
// not a network namespace (an unmounted bind mount, a regular file).
var ErrNotNetNS = errors.New("not a network namespace")

package ipamconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/containernetworking/cni/pkg/types"
)

// MaxConfigSize bounds a network configuration. Real ones are a few KiB;
// the bound keeps a config (plus the request around it) under ipamd's
// request limit, so an oversized one is refused as undecodable (code 6)
// by the plugin instead of failing as a broken connection to ipamd.
const MaxConfigSize = 256 << 10

// maxNameLen bounds a network name: it becomes part of etcd keys and log
// lines. 253 is the longest Kubernetes object (and DNS) name.
const maxNameLen = 253

// CheckDocument refuses what encoding/json lets through but a config author
// cannot have meant: a document larger than MaxConfigSize, and an object
// with the same key twice (Go keeps the last, other parsers the first, so
// the plugins and ipamd could act on a config the runtime did not show).
// what names the document in the message ("network config", "request").
// The error is a CNI error with code 6 naming the key's path.
func CheckDocument(what string, data []byte) error {
	if len(data) > MaxConfigSize {
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("decode %s: %d bytes, larger than the limit of %d", what, len(data), MaxConfigSize), "")
	}
	return CheckDuplicateKeys(what, data)
}

// CheckDuplicateKeys refuses a JSON document with the same key twice in
// one object (code 6, naming the key's path).
func CheckDuplicateKeys(what string, data []byte) error {
	path, err := duplicateKey(data)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode %s: %v", what, err), "")
	}
	if path != "" {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode %s: %s: duplicate key", what, path), "")
	}
	return nil
}

// jsonFrame is one open object or array while walking a document.
type jsonFrame struct {
	obj     bool
	path    string
	keys    map[string]bool
	key     string // the member whose value is being read
	wantKey bool
	idx     int
}

func (f *jsonFrame) child() string {
	if f.obj {
		if f.path == "" {
			return f.key
		}
		return f.path + "." + f.key
	}
	return f.path + "[" + strconv.Itoa(f.idx) + "]"
}

// duplicateKey returns the path (e.g. "ipam.ranges[0][0].subnet") of the
// first key repeated within one object, or "". It walks tokens with an
// explicit stack: no recursion, whatever the nesting.
func duplicateKey(data []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var stack []*jsonFrame
	valueDone := func() {
		if len(stack) == 0 {
			return
		}
		top := stack[len(stack)-1]
		if top.obj {
			top.wantKey = true
		} else {
			top.idx++
		}
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		var top *jsonFrame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.wantKey {
			if tok == json.Delim('}') {
				stack = stack[:len(stack)-1]
				valueDone()
				continue
			}
			k, _ := tok.(string)
			if top.keys[k] {
				top.key = k
				return top.child(), nil
			}
			top.keys[k] = true
			top.key, top.wantKey = k, false
			continue
		}
		path := ""
		if top != nil {
			path = top.child()
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &jsonFrame{obj: true, path: path, keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &jsonFrame{path: path})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

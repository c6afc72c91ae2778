package critest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// PauseImage is the sandbox image every containerd of critest uses: built
// locally (BuildPauseImage), never pulled.
const PauseImage = "localhost/v6cni/pause:test"

// BuildPauseImage builds ./pause statically and writes it as a one-layer OCI
// image archive (an oci-layout tar, as `ctr images import` reads it) named
// PauseImage into dir; it returns the archive's path.
func BuildPauseImage(dir string) (string, error) {
	bin := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin,
		"github.com/v6cni/v6cni/internal/testutil/critest/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the pause binary: %v\n%s", err, out)
	}
	pause, err := os.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("read the pause binary: %w", err)
	}
	archive, err := pauseArchive(pause)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "pause.oci.tar")
	if err := os.WriteFile(path, archive, 0o644); err != nil {
		return "", fmt.Errorf("write the pause image: %w", err)
	}
	return path, nil
}

// blob is one content-addressed file of an OCI layout.
type blob struct {
	mediaType string
	data      []byte
}

func (b blob) digest() string {
	sum := sha256.Sum256(b.data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (b blob) descriptor() map[string]any {
	return map[string]any{"mediaType": b.mediaType, "digest": b.digest(), "size": len(b.data)}
}

// pauseArchive returns the OCI layout archive of an image whose only file
// is /pause, its entrypoint.
func pauseArchive(pause []byte) ([]byte, error) {
	// A fixed time keeps the image's digest the same for the same binary.
	mtime := time.Unix(0, 0)
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(pause)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
		return nil, fmt.Errorf("pause layer: %w", err)
	}
	if _, err := tw.Write(pause); err != nil {
		return nil, fmt.Errorf("pause layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("pause layer: %w", err)
	}
	layerBlob := blob{"application/vnd.oci.image.layer.v1.tar", layer.Bytes()}

	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": []string{"/pause"}},
		// Uncompressed: the diff ID is the layer's own digest.
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerBlob.digest()}},
	})
	if err != nil {
		return nil, err
	}
	configBlob := blob{"application/vnd.oci.image.config.v1+json", config}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        configBlob.descriptor(),
		"layers":        []any{layerBlob.descriptor()},
	})
	if err != nil {
		return nil, err
	}
	manifestBlob := blob{"application/vnd.oci.image.manifest.v1+json", manifest}
	md := manifestBlob.descriptor()
	md["platform"] = map[string]string{"architecture": runtime.GOARCH, "os": "linux"}
	md["annotations"] = map[string]string{
		// ctr import names the image after io.containerd.image.name.
		"io.containerd.image.name":          PauseImage,
		"org.opencontainers.image.ref.name": "test",
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{md},
	})
	if err != nil {
		return nil, err
	}

	var out bytes.Buffer
	aw := tar.NewWriter(&out)
	add := func(name string, data []byte) error {
		if err := aw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := aw.Write(data)
		return err
	}
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
	}
	for _, b := range []blob{layerBlob, configBlob, manifestBlob} {
		files = append(files, struct {
			name string
			data []byte
		}{"blobs/sha256/" + b.digest()[len("sha256:"):], b.data})
	}
	for _, f := range files {
		if err := add(f.name, f.data); err != nil {
			return nil, fmt.Errorf("pause image archive: %s: %w", f.name, err)
		}
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("pause image archive: %w", err)
	}
	return out.Bytes(), nil
}

package critest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// TestPauseArchive checks the OCI layout of the pause image as an importer
// follows it: index → manifest → config and layer, every blob under its
// digest, the layer's diff ID in the config, /pause executable, the name.
func TestPauseArchive(t *testing.T) {
	archive, err := pauseArchive([]byte("not really a binary"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	for name, b := range files {
		if d, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != d {
				t.Errorf("blob %s: content digest %x", name, sum)
			}
		}
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int               `json:"size"`
		Annotations map[string]string `json:"annotations"`
	}
	blobOf := func(d desc) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok || len(b) != d.Size {
			t.Fatalf("descriptor %+v: no blob of that size", d)
		}
		return b
	}
	if _, ok := files["oci-layout"]; !ok {
		t.Fatal("no oci-layout")
	}
	var index struct{ Manifests []desc }
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v, %d manifests", err, len(index.Manifests))
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != PauseImage {
		t.Errorf("image name %q, want %q", got, PauseImage)
	}
	var manifest struct {
		Config desc
		Layers []desc
	}
	if err := json.Unmarshal(blobOf(index.Manifests[0]), &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("manifest: %v, %d layers", err, len(manifest.Layers))
	}
	var config struct {
		Config struct{ Entrypoint []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blobOf(manifest.Config), &config); err != nil {
		t.Fatal(err)
	}
	if len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != manifest.Layers[0].Digest {
		t.Errorf("diff_ids %v, want the uncompressed layer's digest %s", config.RootFS.DiffIDs, manifest.Layers[0].Digest)
	}
	if len(config.Config.Entrypoint) != 1 || config.Config.Entrypoint[0] != "/pause" {
		t.Errorf("entrypoint %v, want [/pause]", config.Config.Entrypoint)
	}
	lr := tar.NewReader(bytes.NewReader(blobOf(manifest.Layers[0])))
	h, err := lr.Next()
	if err != nil || h.Name != "pause" || h.Mode&0o111 == 0 {
		t.Fatalf("layer: first entry %+v, %v; want an executable pause", h, err)
	}
}

package vmtest

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// Kernel modules are found by name in the kernel's module tree and loaded
// after the modules they depend on. The dependencies are read from each
// module's own .modinfo section ("depends=stp,llc"), the data depmod builds
// modules.dep from: a kernel unpacked from its .deb has no modules.dep.

// moduleName normalises a module name or file name as the kernel does:
// no directory, no .ko suffix, '-' as '_'.
func moduleName(s string) string {
	s = filepath.Base(s)
	if i := strings.Index(s, ".ko"); i >= 0 {
		s = s[:i]
	}
	return strings.ReplaceAll(s, "-", "_")
}

// indexModules maps every module under dir to its file.
func indexModules(dir string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			idx[moduleName(d.Name())] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index kernel modules in %s: %w", dir, err)
	}
	return idx, nil
}

// modinfo returns the key=value pairs of the .modinfo section of a module
// file (uncompressed .ko).
func modinfo(file string) (map[string][]string, error) {
	if !strings.HasSuffix(file, ".ko") {
		return nil, fmt.Errorf("module %s is compressed: only plain .ko modules are supported (the kernel package in use ships them)", file)
	}
	f, err := elf.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", file, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s has no .modinfo section", file)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo of %s: %w", file, err)
	}
	return parseModinfo(data), nil
}

// parseModinfo splits a .modinfo section: NUL-separated key=value strings.
func parseModinfo(data []byte) map[string][]string {
	info := map[string][]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if ok {
			info[k] = append(info[k], v)
		}
	}
	return info
}

// resolveModules returns the files of the named modules and of everything
// they depend on, each dependency before the modules that need it.
func resolveModules(dir string, names []string) ([]string, error) {
	idx, err := indexModules(dir)
	if err != nil {
		return nil, err
	}
	var order []string
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(name, neededBy string) error
	visit = func(name, neededBy string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("kernel module %s: dependency cycle", name)
		case 2:
			return nil
		}
		file, ok := idx[name]
		if !ok {
			if neededBy != "" {
				return fmt.Errorf("kernel module %s (needed by %s) not found under %s", name, neededBy, dir)
			}
			return fmt.Errorf("kernel module %s not found under %s", name, dir)
		}
		state[name] = 1
		info, err := modinfo(file)
		if err != nil {
			return err
		}
		for _, deps := range info["depends"] {
			for dep := range strings.SplitSeq(deps, ",") {
				if dep = strings.TrimSpace(dep); dep == "" {
					continue
				}
				if err := visit(moduleName(dep), name); err != nil {
					return err
				}
			}
		}
		state[name] = 2
		order = append(order, file)
		return nil
	}
	for _, n := range names {
		if err := visit(moduleName(n), ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

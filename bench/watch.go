package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"kwatch/watcher"
)

type watchResult struct {
	dirs, files int
	setup       time.Duration // median watcher.New over setupRuns
	checkout    int           // files the checkout wrote
	batches     int           // batches it produced
	batchFiles  int           // changed files in the first batch
	latency     time.Duration // last write to the first batch
}

const setupRuns = 5

// measureWatch times watching a tree of 2,000 directories and 20,000 files,
// then writes 500 of its files at once, like a git checkout, and counts the
// batches that come out.
func measureWatch(work string) (watchResult, error) {
	r := watchResult{checkout: 500}
	root := filepath.Join(work, "tree")
	var files []string
	for i := range 40 {
		r.dirs++
		for j := range 50 {
			dir := filepath.Join(root, fmt.Sprintf("d%02d/s%02d", i, j))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return r, err
			}
			r.dirs++
			for k := range 10 {
				f := filepath.Join(dir, fmt.Sprintf("f%d.c", k))
				if err := os.WriteFile(f, []byte("int x;\n"), 0o644); err != nil {
					return r, err
				}
				files = append(files, f)
			}
		}
	}
	r.files = len(files)
	defer os.RemoveAll(root)

	var setups []time.Duration
	for range setupRuns {
		t := time.Now()
		w, err := watcher.New(root, watcher.Options{})
		setups = append(setups, time.Since(t))
		if err != nil {
			return r, err
		}
		w.Close()
	}
	slices.Sort(setups)
	r.setup = setups[len(setups)/2]

	w, err := watcher.New(root, watcher.Options{})
	if err != nil {
		return r, err
	}
	defer w.Close()
	// Every 40th file: the checkout touches all corners of the tree.
	for i := range r.checkout {
		if err := os.WriteFile(files[i*len(files)/r.checkout], []byte("int y;\n"), 0o644); err != nil {
			return r, err
		}
	}
	written := time.Now()
	quiet := time.After(3 * time.Second)
	for {
		select {
		case b := <-w.Batches():
			if r.batches == 0 {
				r.latency, r.batchFiles = time.Since(written), len(b.Changed)
			}
			r.batches++
		case err := <-w.Errors():
			return r, err
		case <-quiet:
			return r, nil
		}
	}
}

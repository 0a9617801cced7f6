package loop

import "kwatch/watcher"

// Watcher delivers batches of source changes (package watcher).
type Watcher interface {
	Batches() <-chan watcher.Batch
	Errors() <-chan error
}

// Command etcd is the real etcd server, built from the go.etcd.io/etcd/server/v3
// Go module (the version pinned in ../../go.mod): the same entry point as
// upstream etcd's main.go, so it takes etcd's usual flags.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

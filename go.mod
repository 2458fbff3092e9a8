module keel

go 1.26.0

require (
	github.com/HdrHistogram/hdrhistogram-go v1.4.0
	github.com/anishathalye/porcupine v1.3.1
	github.com/cockroachdb/datadriven v1.0.2
	github.com/pawelgaczynski/giouring v0.0.0-20230826085535-69588b89acb9
	github.com/valyala/fasthttp v1.73.0
	go.etcd.io/raft/v3 v3.6.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/andybalholm/brotli v1.2.2 // indirect
	github.com/gogo/protobuf v1.3.2 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/google/btree v1.1.3 // indirect
	github.com/klauspost/compress v1.19.1 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	google.golang.org/protobuf v1.33.0 // indirect
)

package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// EnsureTopics creates topics with the given partition count and
// replication factor; a topic that already exists counts as success and is
// left as it is (its partition count is not changed, as that would move
// keys to other partitions). partitions <= 0 or replication <= 0 ask for
// the broker's default. The request goes to the controller; on real Kafka a
// new topic's metadata may take a moment to propagate, which producers and
// consumers retry through.
//
// It speaks kmsg.CreateTopicsRequest directly: franz-go's kadm admin
// package is not a dependency of this module.
func EnsureTopics(ctx context.Context, cl *kgo.Client, partitions int32, replication int16, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 30000
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMillis = int32(max(time.Until(dl).Milliseconds(), 1))
	}
	if partitions <= 0 {
		partitions = -1
	}
	if replication <= 0 {
		replication = -1
	}
	for _, t := range topics {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic = t
		rt.NumPartitions = partitions
		rt.ReplicationFactor = replication
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("bus: create topics: %w", err)
	}
	var errs []error
	seen := make(map[string]bool, len(resp.Topics))
	for _, rt := range resp.Topics {
		seen[rt.Topic] = true
		err := kerr.ErrorForCode(rt.ErrorCode)
		if err == nil || errors.Is(err, kerr.TopicAlreadyExists) {
			continue
		}
		msg := ""
		if rt.ErrorMessage != nil {
			msg = ": " + *rt.ErrorMessage
		}
		errs = append(errs, fmt.Errorf("bus: create topic %s: %w%s", rt.Topic, err, msg))
	}
	for _, t := range topics {
		if !seen[t] {
			errs = append(errs, fmt.Errorf("bus: create topic %s: missing from response", t))
		}
	}
	return errors.Join(errs...)
}

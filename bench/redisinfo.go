package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// RedisCommands returns how many commands the Redis server at addr has
// handled since it started, in total and by command name (INFO
// commandstats calls); each call of this function adds one INFO.
func RedisCommands(addr string) (total float64, byName map[string]float64, err error) {
	body, err := redisInfo(addr, "commandstats")
	if err != nil {
		return 0, nil, err
	}
	byName = map[string]float64{}
	for _, line := range strings.Split(body, "\r\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		v, err := strconv.ParseFloat(calls, 64)
		if err != nil {
			return 0, nil, fmt.Errorf("redis INFO commandstats: %q", line)
		}
		byName[name] = v
		total += v
	}
	return total, byName, nil
}

// redisInfo returns the body of INFO section.
func redisInfo(addr, section string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "INFO "+section+"\r\n"); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	head, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if !strings.HasPrefix(head, "$") || err != nil || n < 0 {
		return "", fmt.Errorf("redis INFO: unexpected reply %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return "", err
	}
	return string(body), nil
}

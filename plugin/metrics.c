/* Metrics under $SYS/broker/persist-lmdb/, published retained every
 * plugin_opt_metrics_interval seconds on the same wall-clock beat as the
 * broker's own $SYS tree (set it to the broker's sys_interval, which a
 * plugin cannot read), so that $SYS-to-Prometheus exporters pick them up. */
#include "adapter.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define PREFIX "$SYS/broker/persist-lmdb/"

static void publish_u64(const char *name, uint64_t v)
{
	char topic[128], payload[24];

	snprintf(topic, sizeof(topic), PREFIX "%s", name);
	snprintf(payload, sizeof(payload), "%" PRIu64, v);
	mosquitto_broker_publish_copy(NULL, topic, (int)strlen(payload), payload, 0, true, NULL);
}

static void publish_all(struct plugin *pl)
{
	struct store_stats s;
	struct feature_stats f;
	uint64_t sessions = 0, sb, online = 0, clients = 0, cb, queued = 0, qb = 0, msgs = 0, mb = 0;
	uint64_t file = 0, map = 0;

	store_get_stats(pl->store, &s);
	features_stats(pl, &f);
	/* A count that cannot be read stays 0 for this round; the commit errors say why. */
	store_count(pl->store, DB_SESSIONS, &sessions, &sb);
	store_count(pl->store, DB_ONLINE, &clients, &cb);
	store_count_online_sessions(pl->store, &online);
	store_count(pl->store, DB_QUEUE, &queued, &qb);
	store_count(pl->store, DB_MSGS, &msgs, &mb);
	store_file_size(pl->store, &file, &map);

	publish_u64("sessions/total", sessions);
	publish_u64("sessions/online", online);
	publish_u64("sessions/offline", sessions > online ? sessions - online : 0);
	publish_u64("clients/connected", clients);
	publish_u64("queue/messages", queued);
	publish_u64("queue/bytes", qb + mb);
	publish_u64("messages/bodies", msgs);
	publish_u64("database/bytes", file);
	publish_u64("database/map-bytes", map);
	publish_u64("database/map-use-percent", map ? file * 100 / map : 0);
	publish_u64("commits/total", s.commits);
	publish_u64("commits/errors", s.commit_errors);
	publish_u64("commits/latency-p50-us", s.commit_us_p50);
	publish_u64("commits/latency-p99-us", s.commit_us_p99);
	publish_u64("records/rejected", s.records_rejected);
	publish_u64("journal/bytes", journal_size(pl->journal));
	publish_u64("journal/used-bytes", journal_used(pl->journal));
	publish_u64("dropped/duplicates", f.duplicates_dropped);
	publish_u64("refused/disk-full", f.refused_disk_full);
	publish_u64("refused/over-budget", f.refused_over_budget);
	publish_u64("refused/over-budget-retained", f.refused_retained);
	publish_u64("refused/over-budget-sessions", f.refused_sessions);
	publish_u64("refused/over-budget-subscriptions", f.refused_subscriptions);
	publish_u64("dropped/queue-full", f.dropped_queue_full);
	publish_u64("dropped/expired", f.dropped_expired);
	publish_u64("backlog/releases", f.backlog_releases);
	publish_u64("backlog/loaded", f.backlog_loaded);
	publish_u64("backlog/out-of-order", f.backlog_out_of_order);
	publish_u64("database/used-bytes", s.used_bytes);
	publish_u64("dedup/ids", f.dedup_ids);
	publish_u64("database/quarantined", pl->quarantined != NULL);
}

void metrics_tick(struct plugin *pl)
{
	time_t now;

	if(!pl->cfg.metrics_interval){
		return;
	}
	now = time(NULL);
	if(now != pl->metrics_last && now % (time_t)pl->cfg.metrics_interval == 0){
		pl->metrics_last = now;
		publish_all(pl);
	}
}

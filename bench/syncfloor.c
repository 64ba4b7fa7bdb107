/* Benchmark anchor, not part of the product: a Mosquitto plugin that does
 * the least a broker can do to have each QoS 1/2 PUBLISH on the disk before
 * its PUBACK: one 200-byte pwrite on an O_DSYNC descriptor, into a
 * zero-filled 4 MiB ring in plugin_opt_dir, from MOSQ_EVT_MESSAGE_IN. Its
 * rate is the most a plugin that syncs once per message can reach on this
 * broker and disk (docs/benchmarks.md, scenario C). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto/broker.h>
#include <mosquitto/broker_plugin.h>

MOSQUITTO_PLUGIN_DECLARE_VERSION(5);

#define RING (4 << 20)
#define REC 200

static mosquitto_plugin_id_t *plugin_id;
static int ring_fd = -1;
static off_t ring_off;

static int on_message_in(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	char rec[REC] = {0};

	(void)event;
	(void)userdata;
	if(ed->qos == 0){
		return MOSQ_ERR_SUCCESS;
	}
	memcpy(rec, ed->payload, ed->payloadlen < REC ? ed->payloadlen : REC);
	if(pwrite(ring_fd, rec, REC, ring_off) != REC){
		mosquitto_log_printf(MOSQ_LOG_ERR, "syncfloor: write failed");
		return MOSQ_ERR_UNKNOWN;
	}
	ring_off = (ring_off + REC) % (RING - REC);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *id, void **userdata, struct mosquitto_opt *opts, int n)
{
	static const char zero[4096];
	const char *dir = NULL;
	char path[4096];
	int fd;

	(void)userdata;
	for(int i = 0; i < n; i++){
		if(!strcmp(opts[i].key, "dir")){
			dir = opts[i].value;
		}
	}
	if(!dir || snprintf(path, sizeof(path), "%s/syncfloor.ring", dir) >= (int)sizeof(path)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "syncfloor: plugin_opt_dir is needed");
		return MOSQ_ERR_INVAL;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	for(int i = 0; fd >= 0 && i < RING / (int)sizeof(zero); i++){
		if(write(fd, zero, sizeof(zero)) != (ssize_t)sizeof(zero)){
			close(fd);
			fd = -1;
		}
	}
	if(fd < 0 || fsync(fd) != 0 || close(fd) != 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "syncfloor: cannot create %s", path);
		return MOSQ_ERR_UNKNOWN;
	}
	ring_fd = open(path, O_WRONLY | O_DSYNC);
	if(ring_fd < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "syncfloor: cannot open %s", path);
		return MOSQ_ERR_UNKNOWN;
	}
	plugin_id = id;
	return mosquitto_callback_register(id, MOSQ_EVT_MESSAGE_IN, on_message_in, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int n)
{
	(void)userdata;
	(void)opts;
	(void)n;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE_IN, on_message_in, NULL);
	return close(ring_fd) == 0 ? MOSQ_ERR_SUCCESS : MOSQ_ERR_UNKNOWN;
}

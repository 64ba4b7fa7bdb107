/* Helpers of the persist-lmdb CLI: config file, output encodings, directories. */
#define _GNU_SOURCE /* nftw's FTW_DEPTH / FTW_PHYS */
#include "cli_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("persist-lmdb: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- mosquitto.conf ---- */

static int set_value(char **dst, const char *value)
{
	char *v = strdup(value);

	if(!v){
		return -1;
	}
	free(*dst);
	*dst = v;
	return 0;
}

static bool names_this_plugin(const char *path)
{
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	return strstr(base, "persist_lmdb") || strstr(base, "persist-lmdb");
}

int mosq_conf_read(const char *path, struct mosq_conf *conf)
{
	static const struct {
		const char *key;
		size_t offset;
	} keys[] = {
		{"plugin_opt_db_path", offsetof(struct mosq_conf, db_path)},
		{"plugin_opt_key_file", offsetof(struct mosq_conf, key_file)},
		{"plugin_opt_personal_topics", offsetof(struct mosq_conf, personal_topics)},
		{"plugin_opt_map_size", offsetof(struct mosq_conf, map_size)},
	};
	char *line = NULL;
	size_t cap = 0;
	bool ours = true; /* options before any plugin line are taken */
	int rc = 0;
	FILE *f;

	memset(conf, 0, sizeof(*conf));
	f = fopen(path, "r");
	if(!f){
		cli_error("cannot read config file %s: %s", path, strerror(errno));
		return -1;
	}
	while(rc == 0 && getline(&line, &cap, f) >= 0){
		char *key = line, *value, *end;

		while(*key == ' ' || *key == '\t'){
			key++;
		}
		if(*key == '#' || *key == '\0' || *key == '\n' || *key == '\r'){
			continue;
		}
		value = key + strcspn(key, " \t\r\n");
		if(*value){
			*value++ = '\0';
		}
		value += strspn(value, " \t");
		end = value + strlen(value);
		while(end > value && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t')){
			*--end = '\0';
		}
		if(!strcmp(key, "plugin") || !strcmp(key, "global_plugin")){
			ours = names_this_plugin(value);
		}else if(!strcmp(key, "persistence_location")){
			rc = set_value(&conf->persistence_location, value);
		}else if(ours){
			for(size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++){
				if(!strcmp(key, keys[i].key)){
					rc = set_value((char **)((char *)conf + keys[i].offset), value);
				}
			}
		}
	}
	if(rc){
		cli_error("out of memory reading %s", path);
	}else if(ferror(f)){
		cli_error("cannot read config file %s: %s", path, strerror(errno));
		rc = -1;
	}
	free(line);
	fclose(f);
	if(rc){
		mosq_conf_free(conf);
	}
	return rc;
}

void mosq_conf_free(struct mosq_conf *conf)
{
	free(conf->persistence_location);
	free(conf->db_path);
	free(conf->key_file);
	free(conf->personal_topics);
	free(conf->map_size);
	memset(conf, 0, sizeof(*conf));
}

/* ---- text output ---- */

void print_text(FILE *f, const char *s)
{
	for(const unsigned char *p = (const unsigned char *)s; *p; p++){
		if(*p < 0x20 || *p == 0x7f || *p == '\\'){
			fprintf(f, "\\x%02x", *p);
		}else{
			fputc(*p, f);
		}
	}
}

/* Length of the UTF-8 sequence at p holding a printable character, or 0. */
static size_t printable_char(const uint8_t *p, size_t left)
{
	uint32_t cp;
	size_t n;

	if(p[0] < 0x80){
		return p[0] >= 0x20 && p[0] != 0x7f;
	}
	if(p[0] >= 0xc2 && p[0] <= 0xdf){
		n = 2;
		cp = p[0] & 0x1f;
	}else if(p[0] >= 0xe0 && p[0] <= 0xef){
		n = 3;
		cp = p[0] & 0x0f;
	}else if(p[0] >= 0xf0 && p[0] <= 0xf4){
		n = 4;
		cp = p[0] & 0x07;
	}else{
		return 0;
	}
	if(n > left){
		return 0;
	}
	for(size_t i = 1; i < n; i++){
		if((p[i] & 0xc0) != 0x80){
			return 0;
		}
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	/* Overlong forms, surrogates, beyond U+10FFFF, C1 controls. */
	if((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff)
			|| cp > 0x10ffff || (cp >= 0x80 && cp < 0xa0)){
		return 0;
	}
	return n;
}

void print_payload(FILE *f, const uint8_t *p, size_t len)
{
	size_t i = 0, n;

	while(i < len && (n = printable_char(p + i, len - i)) > 0){
		i += n;
	}
	if(i == len){
		fwrite(p, 1, len, f);
		return;
	}
	fputs("0x", f);
	for(i = 0; i < len; i++){
		fprintf(f, "%02x", p[i]);
	}
}

/* ---- JSON ---- */

int json_add_u64(cJSON *obj, const char *name, uint64_t v)
{
	char num[24];

	/* Raw: a double would round 64-bit ids. */
	snprintf(num, sizeof(num), "%" PRIu64, v);
	return cJSON_AddRawToObject(obj, name, num) ? 0 : -1;
}

int json_add_i64(cJSON *obj, const char *name, int64_t v)
{
	char num[24];

	snprintf(num, sizeof(num), "%" PRId64, v);
	return cJSON_AddRawToObject(obj, name, num) ? 0 : -1;
}

int json_add_str(cJSON *obj, const char *name, const char *s)
{
	return (s ? cJSON_AddStringToObject(obj, name, s) : cJSON_AddNullToObject(obj, name)) ? 0 : -1;
}

int json_add_b64(cJSON *obj, const char *name, const uint8_t *p, size_t len, bool present)
{
	char *b64;
	int rc;

	if(!present){
		return cJSON_AddNullToObject(obj, name) ? 0 : -1;
	}
	if(len > (size_t)INT32_MAX / 4 * 3){
		return -1;
	}
	b64 = malloc(4 * ((len + 2) / 3) + 1);
	if(!b64){
		return -1;
	}
	EVP_EncodeBlock((unsigned char *)b64, p, (int)len);
	rc = cJSON_AddStringToObject(obj, name, b64) ? 0 : -1;
	free(b64);
	return rc;
}

int json_emit(cJSON *obj)
{
	char *s = cJSON_PrintUnformatted(obj);
	int rc = -1;

	if(s){
		rc = puts(s) < 0 ? -1 : 0;
		cJSON_free(s);
	}
	cJSON_Delete(obj);
	return rc;
}

/* ---- directories ---- */

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return type == FTW_DP ? rmdir(path) : unlink(path);
}

int remove_tree(const char *path)
{
	struct stat sb;

	if(lstat(path, &sb) != 0){
		return errno == ENOENT ? 0 : -1;
	}
	if(!S_ISDIR(sb.st_mode)){
		return unlink(path);
	}
	return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc;

	if(fd < 0){
		return -1;
	}
	rc = fsync(fd);
	if(close(fd) != 0){
		rc = -1;
	}
	return rc;
}

int match_owner(const char *dir, const char *owner_dir)
{
	struct stat want, sb;
	struct dirent *de;
	DIR *d;
	int rc = 0;

	if(geteuid() != 0){
		return 0;
	}
	if(stat(owner_dir, &want) != 0 || lstat(dir, &sb) != 0){
		return -1;
	}
	/* Only what we made (owned by root) changes hands. */
	if(sb.st_uid == 0 && (sb.st_uid != want.st_uid || sb.st_gid != want.st_gid)
			&& lchown(dir, want.st_uid, want.st_gid) != 0){
		return -1;
	}
	if((sb.st_mode & 07777) != (want.st_mode & 07777) && chmod(dir, want.st_mode & 07777) != 0){
		return -1;
	}
	d = opendir(dir);
	if(!d){
		return -1;
	}
	while(rc == 0 && (de = readdir(d)) != NULL){
		if(!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")){
			continue;
		}
		if(fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0
				|| (sb.st_uid == 0 && (sb.st_uid != want.st_uid || sb.st_gid != want.st_gid)
					&& fchownat(dirfd(d), de->d_name, want.st_uid, want.st_gid, AT_SYMLINK_NOFOLLOW) != 0)){
			rc = -1;
		}
	}
	closedir(d);
	return rc;
}

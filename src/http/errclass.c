/* errclass.c: the error classes' names, as the KPI log writes them. */
#include "errclass.h"

const char AV_ERR_CONNECT[] = "connect_failed";
const char AV_ERR_TLS[] = "backend_tls_failed";
const char AV_ERR_CONNECT_TIMEOUT[] = "connect_timeout";
const char AV_ERR_FIRST_BYTE_TIMEOUT[] = "first_byte_timeout";
const char AV_ERR_READ_TIMEOUT[] = "read_timeout";
const char AV_ERR_BACKEND_CLOSED[] = "backend_closed";
const char AV_ERR_BACKEND_PROTOCOL[] = "backend_protocol_error";
const char AV_ERR_BUSY[] = "backend_busy";
const char AV_ERR_CLIENT_ABORT[] = "client_abort";
const char AV_ERR_INVALID_JSON[] = "invalid_json";

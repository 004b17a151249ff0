/* Logging to stderr, one line per event. Level from POCKETENV_LOG
 * (error|warn|info|debug), default warn for commands. */
#ifndef PE_CORE_LOG_H
#define PE_CORE_LOG_H

enum { PE_LOG_ERROR, PE_LOG_WARN, PE_LOG_INFO, PE_LOG_DEBUG };

void pe_log_init(void);
void pe_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pe_log_error(...) pe_log(PE_LOG_ERROR, __VA_ARGS__)
#define pe_log_warn(...) pe_log(PE_LOG_WARN, __VA_ARGS__)
#define pe_log_info(...) pe_log(PE_LOG_INFO, __VA_ARGS__)
#define pe_log_debug(...) pe_log(PE_LOG_DEBUG, __VA_ARGS__)

#endif

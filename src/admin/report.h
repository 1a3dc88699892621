/* report.h: the `aviary report` command: KPI logs summarised per route and
 * variant, as a table for people or JSON for tools. */
#ifndef AV_REPORT_H
#define AV_REPORT_H

/* argv[0] is "report"; returns the process exit status. */
int av_report_main(int argc, char **argv);

#endif

# Times to the second everywhere in admin (lists, detail pages, filters): an operator compares
# them with log lines and with each other. Django's English default is "Dec. 5, 2026, 8:05 a.m.".
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"

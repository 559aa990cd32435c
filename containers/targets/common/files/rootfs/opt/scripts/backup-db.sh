#!/bin/sh
# Nightly copy of the inventory SQLite database; run from /etc/cron.d/inventory.
set -eu

DB=/srv/www/inventory/instance/inventory.db
DEST=/var/backups/inventory
KEEP_DAYS=14
STAMP=$(date +%Y%m%d-%H%M)

mkdir -p "$DEST"
echo "$(date '+%F %T') backup start"
python3 - "$DB" "$DEST/inventory-$STAMP.db" <<'PY'
import sqlite3, sys
src = sqlite3.connect(sys.argv[1])
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()
src.close()
PY
gzip -9 "$DEST/inventory-$STAMP.db"
find "$DEST" -name 'inventory-*.db.gz' -mtime +"$KEEP_DAYS" -delete
echo "$(date '+%F %T') backup done: $(du -h "$DEST/inventory-$STAMP.db.gz" | cut -f1) $DEST/inventory-$STAMP.db.gz"

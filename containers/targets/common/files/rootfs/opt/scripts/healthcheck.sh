#!/bin/sh
# Called every 10 minutes from deploy's crontab; restarts the app when /health fails twice.
URL=http://127.0.0.1/health
STATE=/tmp/.inventory-health

if curl -fsS --max-time 5 "$URL" >/dev/null; then
    rm -f "$STATE"
    exit 0
fi
if [ -e "$STATE" ]; then
    logger -t inventory-health "health check failed twice, restarting inventory"
    sudo /usr/bin/systemctl restart inventory
    rm -f "$STATE"
else
    touch "$STATE"
fi
exit 1

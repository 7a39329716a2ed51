#!/bin/sh
# A MOCK of `passthrough-agent run`, used ONLY by `scenarios.py --mock-agent` to self-test the rig's
# scenarios while the real daemon is not there. It is not the agent and proves nothing about it:
# a 0.5 s polling loop over sysfs and libvirt's status XML, one hard-coded card, fixed messages.
BDF=0000:01:00.0
DEV=/sys/bus/pci/devices/$BDF
STATUS=/run/libvirt/qemu/l2.xml
# logger exits at once: journald may not resolve its unit, so OBJECT_SYSTEMD_UNIT= (trusted for uid 0)
# keeps the entry under `journalctl -u passthrough-agent`.
note() { # MESSAGE_ID MESSAGE
    printf 'MESSAGE_ID=%s\nMESSAGE=%s\nPASSTHROUGH_CARD=fpga0\nPCI_SLOT=%s\nGUEST=l2\nPRIORITY=5\nOBJECT_SYSTEMD_UNIT=passthrough-agent.service\n' "$1" "$2" "$BDF" \
        | logger --journald
}
present=0 lastid="" gone_since=0 reported=0
systemd-notify --ready
while true; do
    systemd-notify WATCHDOG=1
    running=0; [ -e $STATUS ] && running=1
    id="$(cut -c3- $DEV/vendor 2>/dev/null):$(cut -c3- $DEV/device 2>/dev/null)"
    if [ -e $DEV ] && [ ${#id} = 9 ]; then
        if [ $present = 0 ]; then note 60bd35b3daf642e1971e5fbb8afbe012 "Card fpga0 appeared at $BDF ($id)"; fi
        if [ -n "$lastid" ] && [ "$id" != "$lastid" ]; then
            note 87eaf757a9994e0e9e84852aa2bceaad "Card fpga0 at $BDF: ID changed $lastid -> $id"
        fi
        present=1 lastid=$id reported=0
        drv=$(basename "$(readlink $DEV/driver 2>/dev/null)" 2>/dev/null)
        if [ $running = 1 ]; then
            if [ "$drv" != vfio-pci ]; then
                { echo vfio-pci >$DEV/driver_override
                  [ -n "$drv" ] && echo $BDF >$DEV/driver/unbind
                  echo $BDF >/sys/bus/pci/drivers_probe; } 2>/dev/null && note 5db2563f473946c9b832d37769f4ceaf "Card fpga0 rebound from ${drv:-none} to vfio-pci"
            elif ! grep -q '<hostdev' $STATUS; then
                virsh attach-device l2 /var/lib/e2e/baseline/hostdev.xml --live >/dev/null \
                    && note afd79f907deb40c780af2c070fd6d999 "Card fpga0 attached to guest l2"
            fi
        elif [ "$drv" = vfio-pci ] || [ -z "$drv" ]; then
            echo >$DEV/driver_override
            [ -n "$drv" ] && echo $BDF >$DEV/driver/unbind
            echo $BDF >/sys/bus/pci/drivers_probe
            note bb210f37c1034266b6a59b379992bbf1 "Card fpga0 given back to the host"
        fi
    elif [ ! -e $DEV ]; then
        if [ $present = 1 ]; then
            note 5b329c87f0e74fd7aa5972e86a441a25 "Card fpga0 vanished from $BDF"; gone_since=$(date +%s)
        fi
        present=0
        if [ $reported = 0 ] && [ $(( $(date +%s) - gone_since )) -ge 30 ]; then
            note c6b6c5e68c224cbba84baf4bda067ba5 "Card fpga0 did not come back within 30 s"; reported=1
        fi
    fi
    sleep 0.5
done

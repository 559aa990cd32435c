/*
 * SandTrap's starter YARA rules (docs/analysis.md): broad, cheap, offline. Operators add their
 * own rule files with `analysis.yara_rules`. Each rule is exercised by tests/unit/test_triage.py
 * on samples the test builds.
 */

rule SandTrap_ELF_UPX_Packed
{
    meta:
        description = "ELF executable packed with UPX (common for IoT bots and miners)"
    strings:
        $upx1 = "UPX!"
        $upx2 = "$Info: This file is packed with the UPX"
    condition:
        uint32(0) == 0x464c457f and any of them
}

rule SandTrap_Mirai_Like
{
    meta:
        description = "Mirai-family traits: busybox applet probing and watchdog disabling"
    strings:
        $busybox = "/bin/busybox" ascii
        $wd1 = "/dev/watchdog" ascii
        $wd2 = "/dev/misc/watchdog" ascii
        $scan = "POST /cdn-cgi/" ascii
    condition:
        $busybox and (any of ($wd*) or $scan)
}

rule SandTrap_Coin_Miner
{
    meta:
        description = "Cryptocurrency miner: stratum pool URLs or XMRig options"
    strings:
        $stratum = "stratum+tcp://" ascii nocase
        $stratum_ssl = "stratum+ssl://" ascii nocase
        $xmrig = "xmrig" ascii nocase
        $donate = "--donate-level" ascii
        $randomx = "randomx" ascii nocase
    condition:
        any of ($stratum*) or ($xmrig and ($donate or $randomx))
}

rule SandTrap_Shell_Dropper
{
    meta:
        description = "Shell script that downloads a file, makes it executable and runs it"
    strings:
        $get1 = /wget[^\n]{1,200}https?:\/\// ascii
        $get2 = /curl[^\n]{1,200}https?:\/\// ascii
        $get3 = /tftp[^\n]{1,100}-g/ ascii
        $chmod = /chmod\s+(\+x|[0-7]?7[0-7][0-7])/ ascii
    condition:
        filesize < 1MB and any of ($get*) and $chmod
}

rule SandTrap_SSH_Key_Implant
{
    meta:
        description = "Script that writes an SSH public key into authorized_keys (T1098.004)"
    strings:
        $path = "authorized_keys" ascii
        $key1 = /ssh-(rsa|ed25519|dss) AAAA[0-9A-Za-z+\/]{20}/ ascii
        $key2 = /ecdsa-sha2-nistp(256|384|521) AAAA[0-9A-Za-z+\/]{20}/ ascii
    condition:
        filesize < 1MB and $path and any of ($key*)
}

rule SandTrap_Cron_Persistence
{
    meta:
        description = "Script that installs a crontab entry (T1053.003)"
    strings:
        $crontab = /crontab\s+(-[a-z]\s+)*[-\/\w]/ ascii
        $spool = "/var/spool/cron" ascii
        $etc = "/etc/cron" ascii
        $reboot = "@reboot" ascii
        $every = "* * * *" ascii
    condition:
        filesize < 1MB and any of ($crontab, $spool, $etc) and any of ($reboot, $every)
}

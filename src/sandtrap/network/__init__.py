"""The network sinkhole: the one host a sandbox's packets reach (issue 16).

`dns`, `sniff`, `budget` and `service` run inside the sinkhole container (standard library only, no
`sandtrap` imports; copied into its image as the package `stsink`); `deploy`, `feed` and `image`
run in SandTrap and reach the engine through `sandbox/docker.py`.
"""

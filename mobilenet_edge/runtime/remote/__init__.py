"""Running bundles on other machines over SSH: push a bundle (copy + the device's own verify), install the
package in a venv on the device, bench or predict there and bring the JSON back (issue #19).

The transport is the OpenSSH client and rsync (scp when rsync is missing on either end), run as
argument lists (never a local shell), with BatchMode and a connect timeout so nothing waits on a
prompt, and the user's ssh config, agent and known_hosts honoured (host-key checking is never turned
off). Modules: :mod:`.hosts` (HOST[:DIR] and the ssh command line), :mod:`.transport` (remote commands,
copies), :mod:`.push` (push + verify), :mod:`.install` (``push --install``), :mod:`.fleet` (bench / predict
on several hosts in parallel). Imports: core and runtime only (this is the runtime layer).
"""

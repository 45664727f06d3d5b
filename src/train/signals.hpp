#pragma once
// SIGTERM / SIGINT → "stop after this step and checkpoint". A signal handler can only set a
// flag, so this is the one piece of process-wide state: installed by the trainer, read once
// per step. A second SIGINT restores the default action (a user pressing Ctrl-C twice wants out).
namespace competelm {

void install_stop_signal_handlers();
bool stop_requested();     // a SIGTERM or SIGINT has arrived
int stop_signal();         // which one (0 if none)
void reset_stop_request(); // tests

}  // namespace competelm

"""Server bookkeeping that no PanDA domain owns: the monitor's rollup of status changes."""

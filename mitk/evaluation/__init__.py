"""What every task's evaluation shares: the files it reads and the reports it writes."""

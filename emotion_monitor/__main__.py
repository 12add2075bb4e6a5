from emotion_monitor.cli import main

main()

from portmapctl.cli import main

main()

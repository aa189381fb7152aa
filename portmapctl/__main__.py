from portmapctl.entry import main

main()

from voicepulse.cli import main

main()

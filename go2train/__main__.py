from go2train.cli import main

main()

from pcgan.cli import main; import sys; sys.exit(main())

"""`python -m mmgen` = the `mmgen` command."""

from mmgen.cli import main

if __name__ == "__main__":
    main()

# Kaldi-style option parsing, sourced by a script after it sets its defaults:
#   --some-option value  sets the shell variable some_option, which must already exist.
# Unknown options are an error; parsing stops at the first argument not starting with --.
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "usage: $0 [--option value] ..." >&2
      echo "options (current values):" >&2
      for _name in ${spk_option_names:-}; do echo "  --${_name//_/-} ${!_name}" >&2; done
      exit 0 ;;
    --*=*) echo "$0: write options as '--name value', not '$1'" >&2; exit 1 ;;
    --*)
      _name="${1#--}"; _name="${_name//-/_}"
      if [ -z "${!_name+set}" ] || ! [[ " ${spk_option_names:-} " == *" $_name "* ]]; then
        echo "$0: unknown option $1 (run $0 --help for the list)" >&2; exit 1
      fi
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      printf -v "$_name" '%s' "$2"
      shift 2 ;;
    *) break ;;
  esac
done

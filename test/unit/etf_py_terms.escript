#!/usr/bin/env escript
%% SPDX-License-Identifier: Apache-2.0
%% Real Erlang terms for the codec's unit test. "generate File" writes each term below as a
%% 4-byte length and its term_to_binary. "check Original Echoed" reads both files and checks
%% that every echoed term, encoded again by term_to_binary, is the original byte for byte.
-mode(compile).

main(["generate", File]) ->
    ok = file:write_file(File, [frame(term_to_binary(T)) || T <- terms()]);
main(["check", Original, Echoed]) ->
    Expected = read(Original),
    Got = read(Echoed),
    case length(Expected) =:= length(Got) of
        true -> ok;
        false -> fail("~b terms sent, ~b echoed", [length(Expected), length(Got)])
    end,
    Bad = [{I, binary_to_term(E), safe_decode(G)}
           || {I, E, G} <- lists:zip3(lists:seq(1, length(Got)), Expected, Got),
              not same(E, G)],
    case Bad of
        [] -> io:format("ok ~b terms~n", [length(Got)]);
        _ -> fail("terms changed in the round trip: ~p", [Bad])
    end.

terms() ->
    <<NegativeZero/float>> = <<128, 0, 0, 0, 0, 0, 0, 0>>,
    [1, 255, 256, -1, 134217728, 2147483647, -2147483648, 2147483648, 1 bsl 64,
     -(1 bsl 200), (1 bsl 2400) - 1,
     0.0, NegativeZero, 5.0e-324, 1.7976931348623157e308, 1.5, -2.5e-300,
     true, false, nil, undefined, ok, 'привет', list_to_atom(lists:duplicate(255, $я)),
     <<>>, <<"héllo"/utf8>>, <<255, 254>>, binary:copy(<<"abc">>, 1000),
     [], [1, 2, 3], "abc", [256, 1], lists:seq(1, 300), [a, [b, [c]]], [{x, 1.5}],
     {}, {ok, 1}, list_to_tuple(lists:seq(1, 300)),
     #{}, #{a => 1, <<"b">> => [2], {c} => #{d => nil}},
     maps:from_list([{I, I * I} || I <- lists:seq(1, 40)]),
     self(), make_ref(), hd(erlang:ports()), fun lists:map/2, fun(X) -> {X, self()} end,
     [nan, infinity, neg_infinity]].

same(Expected, Got) ->
    try term_to_binary(binary_to_term(Got)) =:= Expected
    catch error:badarg -> false
    end.

safe_decode(Bin) ->
    try binary_to_term(Bin) catch error:badarg -> {invalid_term, Bin} end.

frame(Bin) ->
    [<<(byte_size(Bin)):32>>, Bin].

read(File) ->
    {ok, Bin} = file:read_file(File),
    unframe(Bin, []).

unframe(<<>>, Acc) -> lists:reverse(Acc);
unframe(<<N:32, Term:N/binary, Rest/binary>>, Acc) -> unframe(Rest, [Term | Acc]).

fail(Format, Args) ->
    io:format(standard_error, Format ++ "~n", Args),
    halt(1).
